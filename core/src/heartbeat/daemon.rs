//! `cairn-heartbeat run`: the event loop, its three helper threads (system bus, status
//! directory, deliveries) and the service manager protocol (`READY=1`, `WATCHDOG=1`,
//! `STATUS=`). See the parent module for the design.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::mem::MaybeUninit;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, RecvTimeoutError, Sender};
use std::time::{Duration, Instant};

use super::ping::{self, Check, PingKind};
use super::stale::{self, Staleness, State, Step};
use super::{metrics, HeartbeatDirs};
use crate::alert::Alert;
use crate::config::Config;
use crate::stage::{dbus, msg, status, Exit, Priority, StageResult, StatusFile};
use sd_notify::NotifyState;

/// How long `READY=1` waits for the first connection attempt to the bus.
const READY_WAIT: Duration = Duration::from_secs(5);
/// Longest wait between two reconnection attempts to the bus.
const BUS_BACKOFF_MAX: Duration = Duration::from_secs(60);
/// How often a missing status directory is looked for.
const DIR_POLL: Duration = Duration::from_secs(30);

enum Event {
    /// A `StageFinished` signal: (stage, result, run id).
    Signal(String, String, String),
    /// Connected to the bus and listening.
    BusUp,
    /// Not connected (why).
    BusDown(String),
    /// Something changed in the status directory.
    StatusChanged,
    /// A staleness alert went out (or not).
    Alerted {
        staleness: Staleness,
        reached: Vec<&'static str>,
    },
}

enum Job {
    Ping {
        check: Check,
        kind: PingKind,
        body: String,
        about: String,
    },
    Stale {
        staleness: Staleness,
        alert: Alert,
    },
}

struct Daemon {
    cfg: Config,
    dirs: HeartbeatDirs,
    notifier: Notifier,
    state: State,
    /// Per stage: the run id and result last seen in its status file.
    seen: HashMap<String, (String, StageResult)>,
    /// Watches whose alert is on its way.
    pending: HashSet<&'static str>,
    jobs: Sender<Job>,
    bus: Option<Result<(), String>>,
    host: String,
    metrics_error: Option<String>,
    status_errors: Vec<String>,
    last_status_line: String,
}

pub(super) fn run(cfg: Config, dirs: HeartbeatDirs) -> i32 {
    let notifier = Notifier::from_env();
    let watchdog = watchdog_interval();
    let (tx, rx) = mpsc::channel::<Event>();
    let (jobs_tx, jobs_rx) = mpsc::channel::<Job>();

    // Triggers first, then the initial read: nothing that happens in between is missed.
    let spawn = |name: &str, f: Box<dyn FnOnce() + Send>| {
        std::thread::Builder::new()
            .name(name.into())
            .spawn(f)
            .map_err(|e| format!("cannot start the {name} thread: {e}"))
    };
    let status_dir = status::status_dir(&dirs.stages);
    let started = [
        spawn("cairn-hb-bus", {
            let tx = tx.clone();
            Box::new(move || listen_bus(tx))
        }),
        spawn("cairn-hb-watch", {
            let tx = tx.clone();
            Box::new(move || watch_dir(status_dir, tx))
        }),
        spawn("cairn-hb-send", {
            let tx = tx.clone();
            let cfg = cfg.clone();
            Box::new(move || deliver(cfg, jobs_rx, tx))
        }),
    ];
    for s in started {
        if let Err(e) = s {
            crate::stage::log(Priority::Err, &e);
            return Exit::Environment.code();
        }
    }

    let now = super::now();
    let (state, changed) = super::load_state(&dirs, now);
    if changed {
        super::save_state(&dirs, &state);
    }
    let mut d = Daemon {
        host: crate::util::hostname(),
        cfg,
        dirs,
        notifier,
        state,
        seen: HashMap::new(),
        pending: HashSet::new(),
        jobs: jobs_tx,
        bus: None,
        metrics_error: None,
        status_errors: Vec::new(),
        last_status_line: String::new(),
    };
    // What is there now was before our time: remembered, not pinged.
    let (statuses, _) = d.read();
    for (stage, s) in &statuses {
        d.seen.insert(stage.clone(), (s.run_id.clone(), s.result));
    }
    d.describe_config();
    d.refresh(true);

    let begun = Instant::now();
    let mut ready = false;
    let mut next_tick = Instant::now() + super::CHECK_INTERVAL;
    let mut next_watchdog = watchdog.map(|w| Instant::now() + w);
    loop {
        if !ready && (d.bus.is_some() || begun.elapsed() >= READY_WAIT) {
            ready = true;
            d.notify(&[NotifyState::Ready]);
            d.update_status(true);
        }
        let mut wake = next_tick;
        if let Some(w) = next_watchdog {
            wake = wake.min(w);
        }
        if !ready {
            wake = wake.min(begun + READY_WAIT);
        }
        let wait = wake.saturating_duration_since(Instant::now());
        match rx.recv_timeout(wait) {
            Ok(ev) => d.handle(ev),
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => {
                crate::stage::log(Priority::Err, "all helper threads ended; exiting");
                return Exit::Failed.code();
            }
        }
        let now = Instant::now();
        if let (Some(w), Some(at)) = (watchdog, next_watchdog) {
            if now >= at {
                d.notify(&[NotifyState::Watchdog]);
                next_watchdog = Some(now + w);
            }
        }
        if now >= next_tick {
            d.refresh(true);
            next_tick = now + super::CHECK_INTERVAL;
        }
    }
}

/// `sd_notify` to `$NOTIFY_SOCKET` (a path, or `@name` for an abstract socket), as the
/// stages do (`stage::notify` is private to them); nothing without the variable.
struct Notifier {
    socket: Option<std::ffi::OsString>,
}

impl Notifier {
    fn from_env() -> Notifier {
        Notifier {
            socket: std::env::var_os("NOTIFY_SOCKET").filter(|s| !s.is_empty()),
        }
    }

    fn send(&self, states: &[NotifyState<'_>]) -> std::io::Result<()> {
        use std::os::unix::ffi::OsStrExt;
        use std::os::unix::net::UnixDatagram;
        let Some(addr) = &self.socket else {
            return Ok(());
        };
        let mut text = String::new();
        for s in states {
            text.push_str(&s.to_string());
            text.push('\n');
        }
        let sock = UnixDatagram::unbound()?;
        let bytes = addr.as_bytes();
        if let Some(name) = bytes.strip_prefix(b"@") {
            use std::os::linux::net::SocketAddrExt;
            let sa = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
            sock.send_to_addr(text.as_bytes(), &sa)?;
        } else {
            sock.send_to(text.as_bytes(), addr)?;
        }
        Ok(())
    }
}

/// Half of `$WATCHDOG_USEC`, when it is meant for this process (`$WATCHDOG_PID`).
fn watchdog_interval() -> Option<Duration> {
    if let Ok(pid) = std::env::var("WATCHDOG_PID") {
        if pid.trim().parse::<u32>().ok() != Some(std::process::id()) {
            return None;
        }
    }
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.trim().parse().ok()?;
    (usec > 0).then(|| Duration::from_micros(usec / 2))
}

impl Daemon {
    fn notify(&self, states: &[NotifyState<'_>]) {
        if let Err(e) = self.notifier.send(states) {
            crate::stage::log(Priority::Debug, &format!("sd_notify failed: {e}"));
        }
    }

    fn describe_config(&self) {
        let hb = self.cfg.heartbeat.as_ref();
        let mut parts = vec![format!(
            "status files in {}",
            status::status_dir(&self.dirs.stages).display()
        )];
        parts.push(format!(
            "pipeline success = {} success",
            super::pipeline_stage(&self.cfg)
        ));
        if hb.is_some_and(|h| h.ping_url.is_some()) {
            parts.push("pinging the pipeline check".into());
        }
        if hb.is_some_and(|h| h.drill_ping_url.is_some()) {
            parts.push("pinging the drill check".into());
        }
        match hb.and_then(|h| h.metrics_file.as_ref()) {
            Some(p) => parts.push(format!("metrics to {}", p.display())),
            None => parts.push("no metrics_file".into()),
        }
        match hb.and_then(|h| h.max_age) {
            Some(m) => parts.push(format!("max_age {}", stale::human_age(m))),
            None => parts.push("no max_age: staleness not checked".into()),
        }
        crate::stage::log(
            Priority::Info,
            &format!(
                "cairn-heartbeat {} started: {}",
                crate::stage::VERSION,
                parts.join(", ")
            ),
        );
    }

    fn read(&mut self) -> (BTreeMap<String, StatusFile>, Vec<String>) {
        let (statuses, errors) = super::read_statuses(&self.dirs.stages);
        // Each distinct problem is reported once, not at every event.
        for e in &errors {
            if !self.status_errors.contains(e) {
                crate::stage::log(Priority::Warning, e);
            }
        }
        self.status_errors.clone_from(&errors);
        (statuses, errors)
    }

    fn handle(&mut self, ev: Event) {
        match ev {
            Event::Signal(stage, result, run) => {
                crate::stage::log(
                    Priority::Info,
                    &format!("StageFinished signal: {stage} {result} (run {run})"),
                );
                self.refresh(false);
                // Confirmed by the status file, or ignored.
                let confirmed = self
                    .seen
                    .get(&stage)
                    .is_some_and(|(r, res)| *r == run && res.as_str() == result);
                if !confirmed {
                    crate::stage::log(
                        Priority::Notice,
                        &format!(
                            "StageFinished signal for {stage} run {run} ({result}) is not what \
                             its status file says: ignored"
                        ),
                    );
                }
            }
            Event::BusUp => {
                if !matches!(self.bus, Some(Ok(()))) {
                    crate::stage::log(
                        Priority::Info,
                        "listening for StageFinished signals on the system bus",
                    );
                }
                self.bus = Some(Ok(()));
                self.update_status(true);
            }
            Event::BusDown(why) => {
                let first = !matches!(&self.bus, Some(Err(w)) if *w == why);
                if first {
                    crate::stage::log_event(
                        &msg::HEARTBEAT_NO_BUS,
                        Priority::Warning,
                        &format!(
                            "not listening on the system bus ({why}); retrying, and following \
                             the status files meanwhile"
                        ),
                        &[],
                    );
                }
                self.bus = Some(Err(why));
                self.update_status(true);
            }
            Event::StatusChanged => self.refresh(false),
            Event::Alerted { staleness, reached } => {
                self.pending.remove(staleness.watch);
                if !reached.is_empty() || self.cfg.alert.is_none() {
                    self.state.record(&staleness, super::now(), &reached);
                    super::save_state(&self.dirs, &self.state);
                }
            }
        }
    }

    /// Read the status files, ping what changed, rewrite the metrics; with `check`, or
    /// when a run finished, also the staleness check.
    fn refresh(&mut self, check: bool) {
        let (statuses, _) = self.read();
        let has_remote = self.cfg.remote.is_some();
        let mut finished_any = false;
        for (stage, s) in &statuses {
            let before = self.seen.get(stage).cloned();
            let now_seen = (s.run_id.clone(), s.result);
            if before.as_ref() == Some(&now_seen) {
                continue;
            }
            let new_run = before.as_ref().is_none_or(|(r, _)| *r != s.run_id);
            self.seen.insert(stage.clone(), now_seen);
            if s.result == StageResult::Running {
                if new_run {
                    if let Some(check) = ping::on_start(stage) {
                        self.queue_ping(
                            check,
                            PingKind::Start,
                            ping::body_for(s, &self.host),
                            format!("{stage} run {} started", s.run_id),
                        );
                    }
                }
                continue;
            }
            finished_any = true;
            if let Some((check, kind)) = ping::on_finish(stage, s.result, s.exit_code, has_remote) {
                self.queue_ping(
                    check,
                    kind,
                    ping::body_for(s, &self.host),
                    format!("{stage} run {} {}", s.run_id, s.result),
                );
            }
        }
        let now = super::now();
        let first_seen = self.state.first_seen.unwrap_or(now);
        let watches = super::assess(&self.cfg, &statuses, first_seen, now);
        if check || finished_any {
            self.check_staleness(&watches, &statuses);
        }
        self.write_metrics(&statuses, &watches, now);
        self.update_status(false);
    }

    fn queue_ping(&self, check: Check, kind: PingKind, body: String, about: String) {
        let configured = self.cfg.heartbeat.as_ref().is_some_and(|h| match check {
            Check::Pipeline => h.ping_url.is_some(),
            Check::Drill => h.drill_ping_url.is_some(),
        });
        if !configured {
            return;
        }
        let _ = self.jobs.send(Job::Ping {
            check,
            kind,
            body,
            about,
        });
    }

    fn check_staleness(&mut self, watches: &[Staleness], statuses: &BTreeMap<String, StatusFile>) {
        let mut changed = false;
        for s in watches {
            match self.state.step(s) {
                Step::Fresh | Step::Ongoing(_) => {}
                Step::Recovered(e) => {
                    super::log_fresh(s, &e);
                    self.state.episodes.remove(s.watch);
                    changed = true;
                }
                Step::NewEpisode => {
                    if self.pending.contains(s.watch) {
                        continue;
                    }
                    super::log_stale(s);
                    if self.cfg.alert.is_none() {
                        crate::stage::log(
                            Priority::Warning,
                            "no [alert] section: the staleness is only in the journal",
                        );
                        self.state.record(s, super::now(), &[]);
                        changed = true;
                        continue;
                    }
                    self.pending.insert(s.watch);
                    let alert = super::stale_alert(s, statuses.get(&s.stage), &self.host);
                    let _ = self.jobs.send(Job::Stale {
                        staleness: s.clone(),
                        alert,
                    });
                }
            }
        }
        if changed {
            super::save_state(&self.dirs, &self.state);
        }
    }

    fn write_metrics(
        &mut self,
        statuses: &BTreeMap<String, StatusFile>,
        watches: &[Staleness],
        now: chrono::DateTime<chrono::Utc>,
    ) {
        let Some(path) = self
            .cfg
            .heartbeat
            .as_ref()
            .and_then(|h| h.metrics_file.clone())
        else {
            return;
        };
        let text = metrics::render(&metrics::Input {
            statuses,
            pipeline_stage: super::pipeline_stage(&self.cfg),
            pipeline: watches.iter().find(|w| w.watch == "pipeline"),
            drill: watches.iter().find(|w| w.watch == "drill"),
            now,
        });
        match metrics::write(&path, &text) {
            Ok(()) => {
                if self.metrics_error.take().is_some() {
                    crate::stage::log(
                        Priority::Notice,
                        &format!("the metrics file {} is written again", path.display()),
                    );
                }
            }
            Err(e) => {
                let text = e.to_string();
                if self.metrics_error.as_deref() != Some(text.as_str()) {
                    super::log_metrics_error(&path, &e);
                    self.metrics_error = Some(text);
                }
            }
        }
    }

    /// `STATUS=`: the pipeline's last success and the bus, when it changed (or `force`).
    fn update_status(&mut self, force: bool) {
        let stage = super::pipeline_stage(&self.cfg);
        let (statuses, _) = super::read_statuses(&self.dirs.stages);
        let last = statuses.get(stage).and_then(|s| {
            s.last_success.or(match s.result {
                StageResult::Success => s.finished,
                _ => None,
            })
        });
        let age = match last {
            Some(t) => format!(
                "{stage} last succeeded {} ago",
                stale::human_age((super::now() - t).to_std().unwrap_or_default())
            ),
            None => format!("{stage} has not succeeded yet"),
        };
        let stale: Vec<&str> = self.state.episodes.keys().map(String::as_str).collect();
        let bus = match &self.bus {
            Some(Ok(())) => "listening on the system bus",
            Some(Err(_)) => "no system bus (retrying)",
            None => "connecting to the system bus",
        };
        let line = if stale.is_empty() {
            format!("{age}; {bus}")
        } else {
            format!("STALE: {}; {age}; {bus}", stale.join(", "))
        };
        if force || line != self.last_status_line {
            self.notify(&[NotifyState::Status(&line)]);
            self.last_status_line = line;
        }
    }
}

/// The bus thread: subscribe to `StageFinished`, forward each signal; reconnect with
/// backoff when the bus is not there or goes away.
fn listen_bus(tx: Sender<Event>) {
    let mut backoff = Duration::from_secs(1);
    loop {
        match subscribe() {
            Ok((_conn, messages)) => {
                if tx.send(Event::BusUp).is_err() {
                    return;
                }
                backoff = Duration::from_secs(1);
                let mut why = "the bus closed the connection".to_string();
                for m in messages {
                    let m = match m {
                        Ok(m) => m,
                        Err(e) => {
                            why = e.to_string();
                            break;
                        }
                    };
                    let Ok((stage, result, run, _summary)) =
                        m.body().deserialize::<(String, String, String, String)>()
                    else {
                        continue;
                    };
                    if tx.send(Event::Signal(stage, result, run)).is_err() {
                        return;
                    }
                }
                if tx.send(Event::BusDown(why)).is_err() {
                    return;
                }
            }
            Err(e) => {
                if tx.send(Event::BusDown(e.to_string())).is_err() {
                    return;
                }
            }
        }
        std::thread::sleep(backoff);
        backoff = (backoff * 2).min(BUS_BACKOFF_MAX);
    }
}

fn subscribe() -> zbus::Result<(zbus::blocking::Connection, zbus::blocking::MessageIterator)> {
    let conn = zbus::blocking::Connection::system()?;
    let rule = zbus::MatchRule::builder()
        .msg_type(zbus::message::Type::Signal)
        .interface(dbus::INTERFACE)?
        .member(dbus::SIGNAL)?
        .path(dbus::OBJECT_PATH)?
        .build();
    let it = zbus::blocking::MessageIterator::for_match_rule(rule, &conn, Some(256))?;
    Ok((conn, it))
}

/// The watch thread: inotify on the status directory (files are renamed into place, so
/// `IN_MOVED_TO`; `IN_CLOSE_WRITE` for anything written in place). A directory that does
/// not exist yet is looked for every 30 s.
fn watch_dir(dir: PathBuf, tx: Sender<Event>) {
    use rustix::fs::inotify::{self, CreateFlags, ReadFlags, WatchFlags};
    let mut reported = false;
    loop {
        let fd = match inotify::init(CreateFlags::CLOEXEC) {
            Ok(fd) => fd,
            Err(e) => {
                crate::stage::log(
                    Priority::Warning,
                    &format!("inotify is not available ({e}); status files are read every 15 min and on signals"),
                );
                return;
            }
        };
        let flags = WatchFlags::MOVED_TO
            | WatchFlags::CLOSE_WRITE
            | WatchFlags::DELETE
            | WatchFlags::DELETE_SELF
            | WatchFlags::MOVE_SELF;
        if let Err(e) = inotify::add_watch(&fd, &dir, flags) {
            if !reported {
                crate::stage::log(
                    Priority::Info,
                    &format!(
                        "cannot watch {} yet ({e}); looking again every {} s",
                        dir.display(),
                        DIR_POLL.as_secs()
                    ),
                );
                reported = true;
            }
            std::thread::sleep(DIR_POLL);
            continue;
        }
        if reported && tx.send(Event::StatusChanged).is_err() {
            return;
        }
        reported = false;
        let mut buf = [MaybeUninit::<u8>::uninit(); 4096];
        let mut reader = inotify::Reader::new(&fd, &mut buf);
        loop {
            let ev = match reader.next() {
                Ok(ev) => ev,
                Err(rustix::io::Errno::INTR) => continue,
                Err(_) => break,
            };
            let gone = ev
                .events()
                .intersects(ReadFlags::IGNORED | ReadFlags::DELETE_SELF | ReadFlags::MOVE_SELF);
            let relevant = ev.file_name().is_some_and(|n| is_status_name(n.to_bytes()));
            if (relevant || gone) && tx.send(Event::StatusChanged).is_err() {
                return;
            }
            if gone {
                break;
            }
        }
    }
}

fn is_status_name(name: &[u8]) -> bool {
    name.ends_with(b".json") && !name.starts_with(b".")
}

/// The delivery thread: pings and staleness alerts, one at a time, in order.
fn deliver(cfg: Config, jobs: mpsc::Receiver<Job>, tx: Sender<Event>) {
    let http = super::http_options(&cfg);
    for job in jobs {
        match job {
            Job::Ping {
                check,
                kind,
                body,
                about,
            } => {
                if let Some(hb) = &cfg.heartbeat {
                    // Logged (PING_FAILED) inside; nothing else to do on failure.
                    let _ = ping::send(hb, check, kind, &body, &about);
                }
            }
            Job::Stale { staleness, alert } => {
                let reached = match &cfg.alert {
                    Some(a) => crate::alert::deliver(a, &alert, &http).reached(),
                    None => Vec::new(),
                };
                if tx.send(Event::Alerted { staleness, reached }).is_err() {
                    return;
                }
            }
        }
    }
}

/// For tests of the module: whether a name in the status directory is a status file.
#[allow(dead_code)]
fn status_name(p: &Path) -> bool {
    p.file_name()
        .is_some_and(|n| is_status_name(std::os::unix::ffi::OsStrExt::as_bytes(n)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temp_files_are_not_status_files() {
        assert!(is_status_name(b"snapshot.json"));
        assert!(!is_status_name(b".tmp-snapshot.json-0011"));
        assert!(!is_status_name(b"snapshot.json.bak"));
        assert!(status_name(Path::new("/x/drill.json")));
    }
}
