//! `cairn-quiesce stop` and `cairn-quiesce start`: stop the services of `[quiesce]` before
//! the snapshot, so that their data on disk is consistent, and always bring them back.
//!
//! `cairn-snapshot.service` runs `stop` as its `ExecStartPre=+` and `start` as its
//! `ExecStopPost=+`, which systemd runs whatever became of the snapshot (failure, timeout,
//! SIGKILL, OOM). Both talk to systemd over D-Bus ([`crate::systemd`]): a unit is stopped
//! with `StopUnit` and started with `StartUnit`, never behind systemd's back, so its
//! dependencies, logging and `systemctl status` stay right.
//!
//! Design: **the record is the only state, and it is written before acting.** `stop`
//! writes the record ([`Record`], `$RUNTIME_DIRECTORY/quiesced.json`, atomically) when a
//! quiesce begins, and adds each unit to it *before* asking systemd to stop it; `start`
//! starts exactly the units the record names, in reverse order, and removes the record
//! last. So a `stop` killed at any instant leaves a record that covers every unit it may
//! have stopped; a unit that was not running is never recorded and so never started; a
//! second `stop` carries on from the record instead of forgetting what it stopped; a
//! second `start` finds no record and does nothing. `start` needs only the record: it
//! brings the units back even when the configuration has become unreadable meanwhile.
//! The record's existence also means that the `pre_hook` ran (or was running), so the
//! `post_hook` is due: every successful `pre_hook` is followed by exactly one `post_hook`.
//!
//! Every wait is bounded: a stop job by `stop_timeout`; a start job by `stop_timeout`,
//! plus the unit's own stop timeout when systemd is still stopping it (a unit that ignored
//! SIGTERM is killed by systemd after its `TimeoutStopSec=`, and the queued start job
//! runs then); a hook by [`HOOK_TIMEOUT`]. A stop that fails or times out aborts the
//! backup (exit 3): everything already stopped is started again, the `post_hook` runs
//! with `CAIRN_RESULT=failure`, and the record is removed, so no snapshot is taken of a
//! half-quiesced system. A unit that does not come back is the most urgent alert cairn
//! has: a `DOWN` mail through the local MTA, and exit 3.
//!
//! `$RUNTIME_DIRECTORY` is where [`Dirs`] says: under the snapshot unit
//! `/run/cairn-snapshot` (its `RuntimeDirectory=`, kept with `RuntimeDirectoryPreserve=`);
//! run by hand without it, [`Dirs::DEFAULT_RUNTIME`] (`/run/cairn`). A run by hand that
//! finds no record there but one of the snapshot unit's says how to act on that one.

use std::ffi::CString;
use std::fs;
use std::io::{self, BufRead, BufReader, Read};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command as Process, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use chrono::{DateTime, SubsecRound, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::alert::{self, Alert};
use crate::config::{AlertConfig, Config, QuiesceConfig};
use crate::stage::{msg, Dirs, Exit, MessageId, Outcome, Priority, Run};
use crate::systemd::{self, Systemd, UnitState};

/// The record's file name in the runtime directory.
pub const RECORD_NAME: &str = "quiesced.json";
/// The runtime directory of `cairn-snapshot.service` (`RuntimeDirectory=cairn-snapshot`).
pub const SNAPSHOT_RUNTIME_DIR: &str = "/run/cairn-snapshot";
/// How long a hook may run before it is killed.
pub const HOOK_TIMEOUT: Duration = Duration::from_secs(600);
/// After SIGTERM to a hook's process group, how long until SIGKILL.
const HOOK_KILL_GRACE: Duration = Duration::from_secs(10);
/// Environment variables a hook never inherits: the stage's secrets and its line to the
/// service manager.
const HOOK_ENV_REMOVED: &[&str] = &["CREDENTIALS_DIRECTORY", "CAIRN_PASSPHRASE", "NOTIFY_SOCKET"];
/// A hook's output: at most this many lines are logged, each cut at this many bytes.
const HOOK_MAX_LINES: usize = 200;
const HOOK_MAX_LINE: usize = 2000;
/// How often a unit's state is polled while waiting for it to settle.
const POLL: Duration = Duration::from_millis(100);

/// Which half.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// Run the pre_hook, stop the running units, record them.
    Stop,
    /// Start the recorded units again, run the post_hook, clear the record.
    Start,
}

impl Command {
    /// `stop` or `start`.
    pub fn as_str(self) -> &'static str {
        match self {
            Command::Stop => "stop",
            Command::Start => "start",
        }
    }
}

/// Command-line arguments of `cairn-quiesce`.
#[derive(Debug, Clone)]
pub struct QuiesceArgs {
    /// `stop` or `start`.
    pub command: Command,
    /// `--config`.
    pub config: Option<PathBuf>,
    /// `--json`.
    pub json: bool,
    /// `--dry-run`.
    pub dry_run: bool,
}

/// What can go wrong with the record.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    /// It exists but cannot be read.
    #[error("cannot read the quiesce record {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// It is not a record.
    #[error(
        "the quiesce record {path} is not valid ({detail}); the units it names may still \
         be stopped: look at it, start them with `systemctl start`, then remove it"
    )]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        detail: String,
    },
    /// It cannot be written.
    #[error("cannot write the quiesce record {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// It cannot be removed.
    #[error("cannot remove the quiesce record {path}: {source}")]
    Remove {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
}

/// Where a recorded unit got to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mark {
    /// Recorded, and systemd asked (or about to be asked) to stop it.
    Stopping,
    /// Its stop job ended with the unit stopped.
    Stopped,
}

/// One unit in the record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordedUnit {
    /// The unit name.
    pub unit: String,
    /// How far its stop got.
    pub state: Mark,
}

/// `$RUNTIME_DIRECTORY/quiesced.json`: a quiesce in progress, and the units it stopped (in
/// stop order). See the module documentation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// Format version ([`Record::VERSION`]).
    pub version: u32,
    /// The run (`CAIRN_RUN`) of the `stop` that began it.
    pub run_id: String,
    /// When it began.
    pub created: DateTime<Utc>,
    /// `stop_timeout` then, in milliseconds: what `start` waits with if the configuration
    /// cannot be read any more.
    pub stop_timeout_ms: u64,
    /// The units, in the order they were stopped.
    pub units: Vec<RecordedUnit>,
}

impl Record {
    /// The format version written.
    pub const VERSION: u32 = 1;

    /// A new, empty record.
    pub fn new(run_id: &str, stop_timeout: Duration) -> Record {
        Record {
            version: Record::VERSION,
            run_id: run_id.to_string(),
            created: Utc::now().trunc_subsecs(3),
            stop_timeout_ms: u64::try_from(stop_timeout.as_millis()).unwrap_or(u64::MAX),
            units: Vec::new(),
        }
    }

    /// The record's path in runtime directory `dir`.
    pub fn path(dir: &Path) -> PathBuf {
        dir.join(RECORD_NAME)
    }

    /// The record in `dir`, if there is one.
    pub fn load(dir: &Path) -> Result<Option<Record>, RecordError> {
        let path = Record::path(dir);
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(RecordError::Read { path, source }),
        };
        let record: Record = serde_json::from_slice(&bytes).map_err(|e| RecordError::Invalid {
            path: path.clone(),
            detail: e.to_string(),
        })?;
        if record.version != Record::VERSION {
            return Err(RecordError::Invalid {
                path,
                detail: format!(
                    "format version {}, this cairn reads version {}",
                    record.version,
                    Record::VERSION
                ),
            });
        }
        Ok(Some(record))
    }

    /// Write the record to `dir` atomically (temp + fsync + rename), creating `dir`.
    pub fn save(&self, dir: &Path) -> Result<(), RecordError> {
        let path = Record::path(dir);
        let write = |source| RecordError::Write {
            path: path.clone(),
            source,
        };
        if !dir.is_dir() {
            use std::os::unix::fs::DirBuilderExt;
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o755)
                .create(dir)
                .map_err(write)?;
        }
        let mut json = serde_json::to_vec_pretty(self).map_err(|e| write(io::Error::other(e)))?;
        json.push(b'\n');
        crate::atomic::write_atomic(&path, &json, 0o644).map_err(write)
    }

    /// Remove the record from `dir` (durably); `Ok(false)` if there was none.
    pub fn clear(dir: &Path) -> Result<bool, RecordError> {
        let path = Record::path(dir);
        match fs::remove_file(&path) {
            Ok(()) => {
                let _ = crate::atomic::sync_dir(dir);
                Ok(true)
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(source) => Err(RecordError::Remove { path, source }),
        }
    }

    /// Whether `unit` is recorded.
    pub fn contains(&self, unit: &str) -> bool {
        self.units.iter().any(|u| u.unit == unit)
    }

    /// Record `unit` as `state` (added at the end if new).
    pub fn mark(&mut self, unit: &str, state: Mark) {
        match self.units.iter_mut().find(|u| u.unit == unit) {
            Some(u) => u.state = state,
            None => self.units.push(RecordedUnit {
                unit: unit.to_string(),
                state,
            }),
        }
    }

    /// The units in the order they are started again: the reverse of the stop order.
    pub fn start_order(&self) -> impl Iterator<Item = &RecordedUnit> {
        self.units.iter().rev()
    }

    /// The `stop_timeout` it was made with.
    pub fn stop_timeout(&self) -> Duration {
        Duration::from_millis(self.stop_timeout_ms.max(1))
    }

    /// The unit names, space-separated, in stop order.
    pub fn unit_list(&self) -> String {
        self.units
            .iter()
            .map(|u| u.unit.as_str())
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// `CAIRN_RESULT` for the post_hook: `success` when systemd says the snapshot service
/// succeeded (`$SERVICE_RESULT` is `success`) and its program exited 0 (`$EXIT_STATUS`),
/// else `failure` — also when they are unset (`start` run by hand, or after an aborted
/// stop).
pub fn snapshot_result(service_result: Option<&str>, exit_status: Option<&str>) -> &'static str {
    if service_result.map(str::trim) == Some("success") && exit_status.map(str::trim) == Some("0") {
        "success"
    } else {
        "failure"
    }
}

// --- hooks --------------------------------------------------------------------------------

/// Why a hook failed.
#[derive(Debug, thiserror::Error)]
pub enum HookError {
    /// `hook_user` is not a user on this machine.
    #[error("hook_user `{0}` does not exist on this machine")]
    NoSuchUser(String),
    /// The user database could not be read.
    #[error("cannot look up hook_user `{user}`: {source}")]
    UserLookup {
        /// The user.
        user: String,
        /// The cause.
        #[source]
        source: nix::Error,
    },
    /// Switching users needs root.
    #[error("cannot run the hook as `{0}`: cairn-quiesce is not running as root")]
    NotRoot(String),
    /// The shell could not be started.
    #[error("cannot start /bin/sh: {0}")]
    Spawn(#[source] io::Error),
    /// Waiting for it failed.
    #[error("cannot wait for it: {0}")]
    Wait(#[source] io::Error),
    /// It exited non-zero.
    #[error("it exited with status {0}")]
    Exit(i32),
    /// It was killed by a signal.
    #[error("it was killed by signal {0}")]
    Signal(i32),
    /// It ran too long and was killed.
    #[error("it did not finish within {0} and was killed")]
    Timeout(String),
}

/// The user a hook runs as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HookUser {
    /// User name.
    pub name: String,
    /// User id.
    pub uid: u32,
    /// Primary group.
    pub gid: u32,
    /// Supplementary groups (from the group database, as `initgroups` would set them).
    pub groups: Vec<u32>,
    /// Home directory (`$HOME`, and the working directory when it exists).
    pub home: PathBuf,
}

impl HookUser {
    /// Look `name` up in the user and group databases.
    pub fn lookup(name: &str) -> Result<HookUser, HookError> {
        let lookup = |source| HookError::UserLookup {
            user: name.to_string(),
            source,
        };
        let user = nix::unistd::User::from_name(name)
            .map_err(lookup)?
            .ok_or_else(|| HookError::NoSuchUser(name.to_string()))?;
        let cname = CString::new(name).map_err(|_| HookError::NoSuchUser(name.to_string()))?;
        let groups = nix::unistd::getgrouplist(&cname, user.gid).map_err(lookup)?;
        Ok(HookUser {
            name: name.to_string(),
            uid: user.uid.as_raw(),
            gid: user.gid.as_raw(),
            groups: groups.into_iter().map(|g| g.as_raw()).collect(),
            home: user.dir,
        })
    }
}

/// One hook to run.
#[derive(Debug, Clone)]
pub struct Hook<'a> {
    /// `pre_hook` or `post_hook`.
    pub name: &'static str,
    /// The command line, for `/bin/sh -c`.
    pub command: &'a str,
    /// Run as this user (else as the caller).
    pub user: Option<&'a HookUser>,
    /// Variables added to its environment.
    pub env: Vec<(&'static str, String)>,
    /// Killed after this long.
    pub timeout: Duration,
}

/// The process for `hook`: `/bin/sh -c COMMAND`, stdin from /dev/null, output piped, in a
/// process group of its own (so a timeout kills what it started too), without the
/// variables of [`HOOK_ENV_REMOVED`], as the hook user if one is given.
fn hook_process(hook: &Hook<'_>) -> Result<Process, HookError> {
    let mut cmd = Process::new("/bin/sh");
    cmd.arg("-c")
        .arg(hook.command)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    for k in HOOK_ENV_REMOVED {
        cmd.env_remove(k);
    }
    for (k, v) in &hook.env {
        cmd.env(k, v);
    }
    if let Some(user) = hook.user {
        let me = nix::unistd::geteuid().as_raw();
        cmd.env("HOME", &user.home)
            .env("USER", &user.name)
            .env("LOGNAME", &user.name)
            .current_dir(if user.home.is_dir() {
                user.home.as_path()
            } else {
                Path::new("/")
            });
        if me != user.uid {
            if me != 0 {
                return Err(HookError::NotRoot(user.name.clone()));
            }
            let (uid, gid, groups) = (user.uid, user.gid, user.groups.clone());
            // SAFETY: between fork and exec only async-signal-safe calls are made
            // (setgroups, setgid, setuid); the group list was built before the fork.
            unsafe {
                cmd.pre_exec(move || {
                    if libc::setgroups(groups.len() as _, groups.as_ptr()) != 0
                        || libc::setgid(gid) != 0
                        || libc::setuid(uid) != 0
                    {
                        return Err(io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
    }
    Ok(cmd)
}

/// Run `hook`, handing each line of its output (stdout and stderr) to `output` as it
/// comes. `Ok` when it exited 0.
pub fn run_hook(hook: &Hook<'_>, output: &mut dyn FnMut(&str)) -> Result<(), HookError> {
    let mut child = hook_process(hook)?.spawn().map_err(HookError::Spawn)?;
    let (tx, rx) = mpsc::channel::<Option<String>>();
    let mut readers = 0;
    if let Some(out) = child.stdout.take() {
        spawn_reader(out, "", tx.clone());
        readers += 1;
    }
    if let Some(err) = child.stderr.take() {
        spawn_reader(err, "(stderr) ", tx.clone());
        readers += 1;
    }
    drop(tx);
    let mut lines = 0usize;
    let mut dropped = 0usize;
    let mut take = |line: Option<String>, readers: &mut usize| match line {
        Some(l) if lines < HOOK_MAX_LINES => {
            lines += 1;
            output(&l);
        }
        Some(_) => dropped += 1,
        None => *readers -= 1,
    };
    let deadline = Instant::now() + hook.timeout;
    let status = loop {
        match rx.recv_timeout(Duration::from_millis(50)) {
            Ok(line) => take(line, &mut readers),
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => std::thread::sleep(POLL),
        }
        if let Some(status) = child.try_wait().map_err(HookError::Wait)? {
            break status;
        }
        if Instant::now() >= deadline {
            kill_group(&mut child);
            // Whatever it printed before it was killed.
            while let Ok(line) = rx.recv_timeout(Duration::from_millis(200)) {
                take(line, &mut readers);
            }
            if dropped > 0 {
                output(&format!("({dropped} more lines not logged)"));
            }
            return Err(HookError::Timeout(crate::util::human_duration(
                hook.timeout,
            )));
        }
    };
    // The rest of its output; a background process it left holding the pipes open is not
    // waited for beyond a second.
    let grace = Instant::now() + Duration::from_secs(1);
    while readers > 0 {
        let left = grace.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => take(line, &mut readers),
            Err(_) => break,
        }
    }
    if dropped > 0 {
        output(&format!("({dropped} more lines not logged)"));
    }
    match (status.code(), status.signal()) {
        (Some(0), _) => Ok(()),
        (Some(code), _) => Err(HookError::Exit(code)),
        (None, Some(sig)) => Err(HookError::Signal(sig)),
        (None, None) => Err(HookError::Exit(-1)),
    }
}

fn spawn_reader(
    stream: impl Read + Send + 'static,
    prefix: &'static str,
    tx: mpsc::Sender<Option<String>>,
) {
    std::thread::spawn(move || {
        let mut reader = BufReader::new(stream);
        let mut buf = Vec::new();
        loop {
            buf.clear();
            match reader.read_until(b'\n', &mut buf) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    let text = String::from_utf8_lossy(&buf);
                    let text = text.trim_end_matches(['\n', '\r']);
                    let mut line: String = text.chars().take(HOOK_MAX_LINE).collect();
                    if line.len() < text.len() {
                        line.push('…');
                    }
                    if tx.send(Some(format!("{prefix}{line}"))).is_err() {
                        return;
                    }
                }
            }
        }
        let _ = tx.send(None);
    });
}

/// SIGTERM to the hook's process group, SIGKILL after [`HOOK_KILL_GRACE`], then reap it.
fn kill_group(child: &mut Child) {
    use nix::sys::signal::{killpg, Signal};
    let pgid = nix::unistd::Pid::from_raw(child.id() as i32);
    let _ = killpg(pgid, Signal::SIGTERM);
    let until = Instant::now() + HOOK_KILL_GRACE;
    while Instant::now() < until {
        if let Ok(Some(_)) = child.try_wait() {
            // The shell is gone; what it started goes too.
            let _ = killpg(pgid, Signal::SIGKILL);
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = killpg(pgid, Signal::SIGKILL);
    let _ = child.wait();
}

// --- the report ---------------------------------------------------------------------------

/// What happened to one unit (one entry per action, in order).
#[derive(Debug, Clone, Serialize)]
struct UnitStep {
    unit: String,
    /// `stopped`, `not_running`, `not_loaded`, `already_stopped`, `would_stop`,
    /// `stop_failed`, `started`, `would_start`, `was_running`, `start_failed`.
    action: &'static str,
    detail: String,
}

/// What happened to a hook.
#[derive(Debug, Clone, Serialize)]
struct HookStep {
    hook: &'static str,
    /// `ok`, `failed`, `would_run`, `not_run`.
    result: &'static str,
    detail: String,
}

/// How bad a problem is, for the mail's verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Severity {
    Warning,
    Failed,
    Down,
}

impl Severity {
    fn verdict(self) -> &'static str {
        match self {
            Severity::Warning => "WARNING",
            Severity::Failed => "FAILED",
            Severity::Down => "DOWN",
        }
    }
}

/// One run of either command.
struct Quiesce<'a> {
    args: &'a QuiesceArgs,
    /// `None`: `start` carrying on although its status file could not be written.
    run: Option<Run>,
    dirs: Dirs,
    units: Vec<UnitStep>,
    hooks: Vec<HookStep>,
    /// (severity, headline, detail), for the mail.
    problems: Vec<(Severity, String, String)>,
    mail: &'static str,
    extra: serde_json::Map<String, serde_json::Value>,
}

/// Run `cairn-quiesce stop|start`; returns the exit code.
pub fn run(args: &QuiesceArgs) -> i32 {
    crate::stage::install_panic_logging();
    let run = match Run::start("quiesce", args.dry_run) {
        Ok(r) => Some(r),
        // The services come first: `start` brings them back even so (and exits 2).
        Err(_) if args.command == Command::Start => {
            crate::stage::log(
                Priority::Warning,
                "carrying on without a status file: the stopped services come back first",
            );
            None
        }
        Err(code) => {
            if args.json {
                println!(
                    "{}",
                    json!({"command": args.command.as_str(), "result": "failure",
                           "exit_code": code,
                           "error": "the status file cannot be written (see the log)"})
                );
            }
            return code;
        }
    };
    let mut q = Quiesce {
        args,
        run,
        dirs: Dirs::from_env(),
        units: Vec::new(),
        hooks: Vec::new(),
        problems: Vec::new(),
        mail: "none",
        extra: serde_json::Map::new(),
    };
    let (outcome, alert_cfg) = match args.command {
        Command::Stop => q.stop(),
        Command::Start => q.start(),
    };
    q.conclude(outcome, alert_cfg.as_ref())
}

impl Quiesce<'_> {
    fn dry(&self) -> bool {
        self.args.dry_run
    }

    fn run_id(&self) -> Option<String> {
        match &self.run {
            Some(Run::Real(s)) => Some(s.run_id().to_string()),
            Some(Run::DryRun) => None,
            None => std::env::var("INVOCATION_ID").ok(),
        }
    }

    fn log(&self, prio: Priority, message: &str) {
        crate::stage::log(prio, message);
    }

    /// An event with its MESSAGE_ID (a dry run logs it without: alert rules must not fire
    /// on a rehearsal).
    fn event(&self, id: &MessageId, prio: Priority, message: &str, unit: &str) {
        if self.dry() {
            crate::stage::log(prio, message);
        } else {
            crate::stage::log_event(id, prio, message, &[("CAIRN_UNIT", unit)]);
        }
    }

    /// `READY=1`, once the configuration is read.
    fn ready(&self) {
        if let Some(r) = &self.run {
            r.ready();
        }
    }

    fn status(&self, text: &str) {
        if let Some(r) = &self.run {
            r.status(text);
        }
    }

    /// A dry run's "would …" line: logged, and printed on stdout without `--json`.
    fn would(&self, text: &str) {
        self.log(Priority::Info, &format!("dry run: would {text}"));
        if !self.args.json {
            println!("would {text}");
        }
    }

    fn step(&mut self, unit: &str, action: &'static str, detail: impl Into<String>) {
        self.units.push(UnitStep {
            unit: unit.to_string(),
            action,
            detail: detail.into(),
        });
    }

    fn problem(
        &mut self,
        severity: Severity,
        headline: impl Into<String>,
        text: impl Into<String>,
    ) {
        self.problems.push((severity, headline.into(), text.into()));
    }

    fn connect(&self) -> Result<Systemd, String> {
        if !systemd::is_running() {
            return Err(
                "systemd is not the service manager here (no /run/systemd/system): \
                        cairn-quiesce stops and starts units through it"
                    .to_string(),
            );
        }
        Systemd::connect().map_err(|e| e.to_string())
    }

    fn load_config(&self) -> Result<Config, String> {
        Config::load(self.args.config.as_deref()).map_err(|e| e.to_string())
    }

    /// When run by hand (no `$RUNTIME_DIRECTORY`), point at the snapshot unit's record.
    fn hint_unit_record(&self) {
        let here = &self.dirs.runtime;
        let unit_dir = Path::new(SNAPSHOT_RUNTIME_DIR);
        if std::env::var_os("RUNTIME_DIRECTORY").is_none()
            && here != unit_dir
            && Record::path(unit_dir).exists()
        {
            self.log(
                Priority::Notice,
                &format!(
                    "cairn-snapshot.service has a record of stopped units in {}; to act on \
                     it, run `RUNTIME_DIRECTORY={} cairn-quiesce start`",
                    SNAPSHOT_RUNTIME_DIR, SNAPSHOT_RUNTIME_DIR
                ),
            );
        }
    }

    fn hook_user(&self, qc: &QuiesceConfig) -> Result<Option<HookUser>, HookError> {
        qc.hook_user.as_deref().map(HookUser::lookup).transpose()
    }

    /// Run a hook, logging its output; records the result. `Err` is the reason, logged
    /// with `HOOK_FAILED`.
    fn hook(
        &mut self,
        name: &'static str,
        command: &str,
        qc: &QuiesceConfig,
        env: Vec<(&'static str, String)>,
    ) -> Result<(), String> {
        let as_user = qc
            .hook_user
            .as_deref()
            .map(|u| format!(" as {u}"))
            .unwrap_or_default();
        if self.dry() {
            let result = env
                .iter()
                .find(|(k, _)| *k == "CAIRN_RESULT")
                .map(|(_, v)| format!(" with CAIRN_RESULT={v}"))
                .unwrap_or_default();
            self.would(&format!("run the {name}{as_user}{result}"));
            self.hooks.push(HookStep {
                hook: name,
                result: "would_run",
                detail: format!("would run{as_user}"),
            });
            return Ok(());
        }
        self.status(&format!("running the {name}"));
        self.log(Priority::Info, &format!("running the {name}{as_user}"));
        let started = Instant::now();
        let result = self.hook_user(qc).and_then(|user| {
            let mut env = env;
            if let Some(id) = self.run_id() {
                env.push(("CAIRN_RUN", id));
            }
            let hook = Hook {
                name,
                command,
                user: user.as_ref(),
                env,
                timeout: HOOK_TIMEOUT,
            };
            run_hook(&hook, &mut |line| {
                crate::stage::log(Priority::Info, &format!("{name}: {line}"))
            })
        });
        let took = format!("{:.1} s", started.elapsed().as_secs_f64());
        match result {
            Ok(()) => {
                self.log(Priority::Info, &format!("the {name} succeeded ({took})"));
                self.hooks.push(HookStep {
                    hook: name,
                    result: "ok",
                    detail: format!("succeeded{as_user} in {took}"),
                });
                Ok(())
            }
            Err(e) => {
                let why = format!("the {name} failed{as_user}: {e}");
                if !self.dry() {
                    crate::stage::log_event(
                        &msg::HOOK_FAILED,
                        Priority::Err,
                        &why,
                        &[("CAIRN_HOOK", name)],
                    );
                }
                self.hooks.push(HookStep {
                    hook: name,
                    result: "failed",
                    detail: e.to_string(),
                });
                Err(why)
            }
        }
    }

    // --- stop -----------------------------------------------------------------------------

    fn stop(&mut self) -> (Outcome, Option<AlertConfig>) {
        let cfg = match self.load_config() {
            Ok(c) => c,
            Err(e) => return (usage(e), None),
        };
        let alert_cfg = cfg.alert.clone();
        self.ready();
        let Some(qc) = cfg.quiesce.clone() else {
            let text = format!(
                "no [quiesce] section in {}: nothing to stop",
                files(&cfg.files)
            );
            return (Outcome::success(text), alert_cfg);
        };
        (self.stop_with(&qc), alert_cfg)
    }

    fn stop_with(&mut self, qc: &QuiesceConfig) -> Outcome {
        let dir = self.dirs.runtime.clone();
        self.extra.insert(
            "record".into(),
            json!(Record::path(&dir).display().to_string()),
        );
        let existing = match Record::load(&dir) {
            Ok(r) => r,
            Err(e) => {
                let e = e.to_string();
                self.problem(Severity::Failed, "nothing was stopped", e.clone());
                return Outcome::failure(Exit::Environment, "nothing stopped", e);
            }
        };
        let sd = if qc.units.is_empty() {
            None
        } else {
            match self.connect() {
                Ok(sd) => Some(sd),
                Err(e) => {
                    self.problem(Severity::Failed, "nothing was stopped", e.clone());
                    return Outcome::failure(Exit::Environment, "nothing stopped", e);
                }
            }
        };
        let resumed = existing.is_some();
        let mut record = match existing {
            Some(r) => {
                let text = format!(
                    "a quiesce is already in progress (record {}, run {}, begun {}): \
                     carrying on from it; the pre_hook is not run again",
                    Record::path(&dir).display(),
                    r.run_id,
                    r.created.to_rfc3339()
                );
                if self.dry() {
                    self.would(&format!("carry on from the record: {text}"));
                } else {
                    self.log(Priority::Warning, &text);
                }
                r
            }
            None => {
                let r = Record::new(
                    &self.run_id().unwrap_or_else(|| "dry-run".into()),
                    qc.stop_timeout,
                );
                if !self.dry() {
                    if let Err(e) = r.save(&dir) {
                        let e = e.to_string();
                        self.problem(Severity::Failed, "nothing was stopped", e.clone());
                        return Outcome::failure(Exit::Environment, "nothing stopped", e);
                    }
                }
                if let Some(cmd) = &qc.pre_hook {
                    let env = vec![
                        ("CAIRN_HOOK", "pre_hook".to_string()),
                        ("CAIRN_UNITS", qc.units.join(" ")),
                    ];
                    if let Err(why) = self.hook("pre_hook", cmd, qc, env) {
                        if let Err(e) = Record::clear(&dir) {
                            self.log(Priority::Err, &e.to_string());
                        }
                        let text = format!("{why}; nothing was stopped and no snapshot runs");
                        self.problem(
                            Severity::Failed,
                            "backup aborted: the pre_hook failed",
                            text.clone(),
                        );
                        return Outcome::failure(Exit::Failed, "backup aborted", text);
                    }
                }
                r
            }
        };
        let Some(sd) = sd else {
            return Outcome::success("no units to stop ([quiesce] has only hooks)");
        };
        let mut stopped = Vec::new();
        let mut not_running = 0;
        for unit in &qc.units {
            let status = match sd.unit_status(unit) {
                Ok(s) => s,
                Err(e) => {
                    let why = format!("cannot read the state of {unit}: {e}");
                    return self.abort(&sd, qc, &mut record, unit, why);
                }
            };
            if !status.is_loaded() {
                let text = format!(
                    "{unit} is not a unit systemd knows (load state {}): it is not stopped, \
                     and the snapshot reads its data live; correct [quiesce] units",
                    status.load_state
                );
                self.event(
                    &msg::QUIESCE_UNIT_NOT_LOADED,
                    Priority::Warning,
                    &text,
                    unit,
                );
                self.problem(
                    Severity::Warning,
                    format!("{unit} is not a unit systemd knows"),
                    text,
                );
                self.step(unit, "not_loaded", status.load_state.clone());
                continue;
            }
            let mut state = status.state;
            if state.active_state == "deactivating" && !record.contains(unit) {
                // Someone else is stopping it: let that finish before the snapshot reads.
                self.log(
                    Priority::Info,
                    &format!("{unit} is being stopped ({state}); waiting for it"),
                );
                state = match settle(&sd, unit, Instant::now() + qc.stop_timeout) {
                    Ok(s) if !s.is_running() && s.active_state != "deactivating" => s,
                    Ok(s) => {
                        let why = format!(
                            "{unit} did not finish stopping within {} (it is {s})",
                            crate::util::human_duration(qc.stop_timeout)
                        );
                        return self.abort(&sd, qc, &mut record, unit, why);
                    }
                    Err(e) => return self.abort(&sd, qc, &mut record, unit, e),
                };
            }
            if !state.is_running() {
                if resumed && record.contains(unit) {
                    self.log(
                        Priority::Info,
                        &format!("{unit} is {state}: stopped already by this quiesce"),
                    );
                    self.step(unit, "already_stopped", state.to_string());
                    stopped.push(unit.clone());
                } else {
                    self.log(
                        Priority::Info,
                        &format!("{unit} is {state}: left alone, and not started afterwards"),
                    );
                    self.step(unit, "not_running", state.to_string());
                    not_running += 1;
                }
                continue;
            }
            if self.dry() {
                self.would(&format!("stop {unit} (it is {state})"));
                self.step(unit, "would_stop", state.to_string());
                stopped.push(unit.clone());
                continue;
            }
            // Recorded before it is stopped: whatever happens next, `start` knows.
            record.mark(unit, Mark::Stopping);
            if let Err(e) = record.save(&self.dirs.runtime) {
                return self.abort(&sd, qc, &mut record, unit, e.to_string());
            }
            self.status(&format!("stopping {unit}"));
            let t0 = Instant::now();
            match sd.stop_unit(unit, qc.stop_timeout) {
                Ok(after) if after.is_stopped() => {
                    record.mark(unit, Mark::Stopped);
                    if let Err(e) = record.save(&self.dirs.runtime) {
                        // Still recorded as stopping, which is enough for `start`.
                        self.log(Priority::Warning, &e.to_string());
                    }
                    let took = format!("{:.1} s", t0.elapsed().as_secs_f64());
                    self.event(
                        &msg::UNIT_STOPPED,
                        Priority::Notice,
                        &format!("stopped {unit} for the snapshot (was {state}, took {took})"),
                        unit,
                    );
                    self.step(unit, "stopped", format!("was {state}, took {took}"));
                    stopped.push(unit.clone());
                }
                Ok(after) => {
                    let why = format!("{unit} is {after} after its stop job ended");
                    return self.abort(&sd, qc, &mut record, unit, why);
                }
                Err(e) => {
                    let now = sd
                        .unit_state(unit)
                        .map(|s| format!(" (it is {s})"))
                        .unwrap_or_default();
                    return self.abort(&sd, qc, &mut record, unit, format!("{e}{now}"));
                }
            }
        }
        let verb = if self.dry() { "would stop" } else { "stopped" };
        let mut text = if stopped.is_empty() {
            format!(
                "nothing to stop: none of the {} units is running",
                qc.units.len()
            )
        } else {
            format!(
                "{verb} {}: {}",
                plural(stopped.len(), "unit"),
                stopped.join(" ")
            )
        };
        if not_running > 0 && !stopped.is_empty() {
            text.push_str(&format!("; {not_running} not running, left alone"));
        }
        Outcome::success(text)
    }

    /// A stop failed: start again everything recorded, run the post_hook with
    /// `CAIRN_RESULT=failure`, clear the record; exit 3.
    fn abort(
        &mut self,
        sd: &Systemd,
        qc: &QuiesceConfig,
        record: &mut Record,
        unit: &str,
        why: String,
    ) -> Outcome {
        let text = format!(
            "{why}: the backup is aborted, no snapshot runs on a half-quiesced system; \
             starting again what was stopped"
        );
        self.event(&msg::UNIT_STOP_FAILED, Priority::Err, &text, unit);
        self.step(unit, "stop_failed", why.clone());
        self.problem(
            Severity::Failed,
            format!("backup aborted: {why}"),
            text.clone(),
        );
        let failed = self.start_recorded(sd, record, qc.stop_timeout, false);
        let _ = self.post_hook(Some(qc), record, "failure");
        if !self.dry() {
            if let Err(e) = Record::clear(&self.dirs.runtime) {
                self.log(Priority::Err, &e.to_string());
            }
        }
        let mut error = why.clone();
        if failed.is_empty() {
            if !record.units.is_empty() {
                error.push_str(&format!("; started again: {}", reversed(record)));
            }
        } else {
            error.push_str(&format!("; DOWN, did not come back: {}", failed.join(" ")));
        }
        Outcome::failure(Exit::Failed, "backup aborted", error)
    }

    // --- start ----------------------------------------------------------------------------

    fn start(&mut self) -> (Outcome, Option<AlertConfig>) {
        let cfg = self.load_config();
        let alert_cfg = cfg.as_ref().ok().and_then(|c| c.alert.clone());
        let qc = cfg.as_ref().ok().and_then(|c| c.quiesce.clone());
        self.ready();
        let dir = self.dirs.runtime.clone();
        self.extra.insert(
            "record".into(),
            json!(Record::path(&dir).display().to_string()),
        );
        let result = snapshot_result(
            std::env::var("SERVICE_RESULT").ok().as_deref(),
            std::env::var("EXIT_STATUS").ok().as_deref(),
        );
        self.extra.insert("snapshot_result".into(), json!(result));
        let record = match Record::load(&dir) {
            Ok(r) => r,
            Err(e) => {
                let e = e.to_string();
                self.log(Priority::Err, &e);
                self.problem(
                    Severity::Down,
                    "the record of stopped services is unreadable",
                    e.clone(),
                );
                return (
                    Outcome::failure(Exit::Environment, "record unreadable", e),
                    alert_cfg,
                );
            }
        };
        let Some(record) = record else {
            let outcome = match &cfg {
                Err(e) => usage(e.clone()),
                Ok(c) if c.quiesce.is_none() => {
                    let text = format!(
                        "no [quiesce] section in {}: nothing to start",
                        files(&c.files)
                    );
                    Outcome::success(text)
                }
                Ok(_) => {
                    let text = format!(
                        "nothing recorded in {}: nothing to start",
                        Record::path(&dir).display()
                    );
                    self.hint_unit_record();
                    Outcome::success(text)
                }
            };
            return (outcome, alert_cfg);
        };
        if let Err(e) = &cfg {
            self.log(
                Priority::Err,
                &format!(
                    "{e}; starting the recorded units anyway (the post_hook cannot run \
                     without the configuration)"
                ),
            );
        }
        let timeout = qc
            .as_ref()
            .map(|q| q.stop_timeout)
            .unwrap_or_else(|| record.stop_timeout());
        let failed = if record.units.is_empty() {
            Vec::new()
        } else {
            match self.connect() {
                Ok(sd) => self.start_recorded(&sd, &record, timeout, true),
                Err(e) => {
                    // Nothing was done: the record stays, for a retry.
                    let text = format!(
                        "{e}; these units stopped for the backup are still stopped: {}",
                        reversed(&record)
                    );
                    self.log(Priority::Err, &text);
                    self.problem(
                        Severity::Down,
                        format!("services still stopped: {}", reversed(&record)),
                        text.clone(),
                    );
                    return (
                        Outcome::failure(Exit::Environment, "services not started", text),
                        alert_cfg,
                    );
                }
            }
        };
        let hook_failed = match &cfg {
            Ok(_) => self.post_hook(qc.as_ref(), &record, result).err(),
            Err(_) => None,
        };
        let cleared = if self.dry() {
            Ok(())
        } else {
            Record::clear(&dir).map(|_| ())
        };
        let verb = if self.dry() { "would start" } else { "started" };
        let up = record
            .start_order()
            .filter(|u| !failed.contains(&u.unit))
            .map(|u| u.unit.as_str())
            .collect::<Vec<_>>();
        let summary = if record.units.is_empty() {
            "no units were stopped".to_string()
        } else if up.is_empty() {
            "no unit came back".to_string()
        } else {
            format!(
                "{verb} {} again: {}",
                plural(up.len(), "unit"),
                up.join(" ")
            )
        };
        let outcome = if !failed.is_empty() {
            Outcome::failure(
                Exit::Failed,
                summary,
                format!("DOWN, did not come back: {}", failed.join(" ")),
            )
        } else if let Some(why) = hook_failed {
            Outcome::failure(Exit::Failed, summary, why)
        } else if let Err(e) = cleared {
            Outcome::failure(Exit::Environment, summary, e.to_string())
        } else if let Err(e) = cfg {
            Outcome::failure(Exit::Usage, summary, e)
        } else {
            Outcome::success(summary)
        };
        (outcome, alert_cfg)
    }

    /// Start the recorded units in reverse order and wait until each is up. Returns the
    /// units that did not come back (each logged with `UNIT_RESTART_FAILED`).
    /// `check_interlopers`: warn about a unit recorded as stopped that is already up again.
    fn start_recorded(
        &mut self,
        sd: &Systemd,
        record: &Record,
        timeout: Duration,
        check_interlopers: bool,
    ) -> Vec<String> {
        let mut failed = Vec::new();
        for ru in record.start_order() {
            let unit = ru.unit.as_str();
            if self.dry() {
                self.would(&format!("start {unit}"));
                self.step(unit, "would_start", String::new());
                continue;
            }
            let before = sd.unit_state(unit).ok();
            if let Some(b) = &before {
                if check_interlopers && ru.state == Mark::Stopped && b.is_running() {
                    let text = format!(
                        "{unit} was already {b} again before the snapshot ended: something \
                         started it while the snapshot read its data, which may be \
                         inconsistent in this snapshot"
                    );
                    self.event(
                        &msg::UNIT_ACTIVE_DURING_BACKUP,
                        Priority::Warning,
                        &text,
                        unit,
                    );
                    self.problem(
                        Severity::Warning,
                        format!("{unit} was running again during the backup"),
                        text,
                    );
                    self.step(unit, "was_running", b.to_string());
                }
            }
            // Still being stopped: systemd kills it after its own stop timeout, and the
            // start job runs after that.
            let mut wait = timeout;
            if before
                .as_ref()
                .is_some_and(|b| b.active_state == "deactivating")
            {
                let own = sd.unit_stop_timeout(unit).ok().flatten();
                wait += own.unwrap_or(timeout);
                self.log(
                    Priority::Notice,
                    &format!(
                        "{unit} is still stopping; systemd starts it again once it has \
                         stopped{}: waiting up to {}",
                        own.map(|d| format!(
                            " (it is killed after its TimeoutStopSec={})",
                            crate::util::human_duration(d)
                        ))
                        .unwrap_or_default(),
                        crate::util::human_duration(wait)
                    ),
                );
            }
            self.status(&format!("starting {unit}"));
            let t0 = Instant::now();
            let deadline = t0 + wait;
            let result = sd
                .start_unit(unit, wait)
                .map_err(|e| {
                    let now = sd
                        .unit_state(unit)
                        .map(|s| format!("; it is {s}"))
                        .unwrap_or_default();
                    format!("{e}{now}")
                })
                .and_then(|s| {
                    if s.is_up() {
                        Ok(s)
                    } else {
                        settle(sd, unit, deadline)
                    }
                });
            match result {
                Ok(s) if s.is_up() => {
                    let took = format!("{:.1} s", t0.elapsed().as_secs_f64());
                    self.event(
                        &msg::UNIT_STARTED,
                        Priority::Notice,
                        &format!("started {unit} again ({s}, took {took})"),
                        unit,
                    );
                    self.step(unit, "started", format!("{s}, took {took}"));
                }
                other => {
                    let why = match other {
                        Ok(s) => format!("it is {s} after its start job"),
                        Err(e) => e,
                    };
                    let text = format!(
                        "{unit} did not come back after the backup ({why}), it is DOWN: \
                         start it by hand, and see `systemctl status {unit}`"
                    );
                    self.event(&msg::UNIT_RESTART_FAILED, Priority::Err, &text, unit);
                    self.problem(
                        Severity::Down,
                        format!("{unit} did not come back after the backup"),
                        text,
                    );
                    self.step(unit, "start_failed", why);
                    failed.push(unit.to_string());
                }
            }
        }
        failed
    }

    /// The post_hook, if configured, with `CAIRN_RESULT=result`.
    fn post_hook(
        &mut self,
        qc: Option<&QuiesceConfig>,
        record: &Record,
        result: &str,
    ) -> Result<(), String> {
        let Some(qc) = qc else { return Ok(()) };
        let Some(cmd) = &qc.post_hook else {
            return Ok(());
        };
        let env = vec![
            ("CAIRN_HOOK", "post_hook".to_string()),
            ("CAIRN_RESULT", result.to_string()),
            ("CAIRN_UNITS", record.unit_list()),
        ];
        let r = self.hook("post_hook", cmd, qc, env);
        if let Err(why) = &r {
            self.problem(Severity::Failed, why.clone(), why.clone());
        }
        r
    }

    // --- the end --------------------------------------------------------------------------

    /// Mail what needs telling, print `--json`, finish the stage.
    fn conclude(mut self, outcome: Outcome, alert_cfg: Option<&AlertConfig>) -> i32 {
        let undelivered = self.send_mail(&outcome, alert_cfg);
        let outcome = match outcome.exit {
            // `stop` never exits 5: a failing ExecStartPre= would cancel the backup.
            Exit::Success if undelivered && self.args.command == Command::Start => {
                Outcome::failure(
                    Exit::Undelivered,
                    outcome.summary.clone(),
                    "an alert could not be delivered (see ALERT_UNDELIVERED)",
                )
            }
            _ => outcome,
        };
        let mut figures = serde_json::Map::new();
        figures.insert("command".into(), json!(self.args.command.as_str()));
        figures.insert("units".into(), json!(self.units));
        figures.insert("hooks".into(), json!(self.hooks));
        figures.insert("mail".into(), json!(self.mail));
        figures.extend(std::mem::take(&mut self.extra));
        let figures = serde_json::Value::Object(figures);
        let outcome = outcome.with_figures(figures.clone());
        if self.args.json {
            let mut v = figures;
            v["result"] = json!(outcome.result().as_str());
            v["exit_code"] = json!(outcome.exit.code());
            v["summary"] = json!(outcome.summary);
            v["error"] = json!(outcome.error);
            v["dry_run"] = json!(self.args.dry_run);
            println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
        }
        match self.run.take() {
            Some(run) => run.finish(outcome),
            None => {
                // `start` without a status file: the services were seen to first.
                let line = match &outcome.error {
                    Some(e) => format!("{}: {e}", outcome.summary),
                    None => outcome.summary.clone(),
                };
                crate::stage::log(
                    Priority::Err,
                    &format!("quiesce start (no status file written): {line}"),
                );
                match outcome.exit {
                    Exit::Success | Exit::Undelivered => Exit::Environment.code(),
                    e => e.code(),
                }
            }
        }
    }

    /// One mail for the run's problems, the worst deciding the verdict. Returns whether a
    /// mail was due and could not be handed over.
    fn send_mail(&mut self, outcome: &Outcome, cfg: Option<&AlertConfig>) -> bool {
        let Some(worst) = self.problems.iter().map(|p| p.0).max() else {
            return false;
        };
        let host = crate::util::hostname();
        let alert = self.alert(worst, outcome, &host);
        if self.dry() {
            self.log(
                Priority::Info,
                &format!("dry run: would mail: {}", alert.subject(&host)),
            );
            return false;
        }
        let Some(cfg) = cfg else {
            self.log(
                Priority::Warning,
                "nobody was mailed: add an [alert] section with mail_to to be told",
            );
            self.mail = "not configured";
            return false;
        };
        match alert::send(cfg, &alert) {
            Ok(()) => {
                self.mail = "sent";
                wait_for_mta();
                false
            }
            Err(_) => {
                self.mail = "failed";
                true
            }
        }
    }

    fn alert(&self, worst: Severity, outcome: &Outcome, host: &str) -> Alert {
        let headline = self
            .problems
            .iter()
            .find(|p| p.0 == worst)
            .map(|p| p.1.clone())
            .unwrap_or_default();
        let mut body = String::new();
        match (worst, self.args.command) {
            (Severity::Down, _) => body.push_str(&format!(
                "Services that cairn stopped for the backup on {host} did NOT come back. \
                 They are down now: start them by hand (`systemctl start UNIT`) and find \
                 out why (`systemctl status UNIT`, `journalctl -u UNIT`).\n\n"
            )),
            (Severity::Failed, Command::Stop) => body.push_str(&format!(
                "The backup on {host} was aborted before the snapshot: cairn-quiesce could \
                 not quiesce the system, and no snapshot is taken of a half-quiesced one. \
                 Whatever it had stopped was started again.\n\n"
            )),
            (Severity::Failed, Command::Start) => body.push_str(&format!(
                "Bringing the services back after the backup on {host} did not go \
                 cleanly.\n\n"
            )),
            (Severity::Warning, _) => body.push_str(&format!(
                "The backup on {host} went ahead, but something needs a look.\n\n"
            )),
        }
        for (sev, _, text) in &self.problems {
            body.push_str(&format!("{}: {text}\n", sev.verdict()));
        }
        if !self.units.is_empty() {
            body.push_str("\nUnits:\n");
            for s in &self.units {
                body.push_str(&format!("  {} {}: {}\n", s.unit, s.action, s.detail));
            }
        }
        for h in &self.hooks {
            body.push_str(&format!("Hook {}: {} {}\n", h.hook, h.result, h.detail));
        }
        body.push_str(&format!(
            "\ncairn-quiesce {}: exit status {}; {}\n",
            self.args.command.as_str(),
            outcome.exit,
            outcome.error.as_deref().unwrap_or(&outcome.summary)
        ));
        Alert {
            stage: "quiesce".into(),
            verdict: worst.verdict().into(),
            headline,
            body,
            run_id: self.run_id(),
        }
    }
}

/// How long to wait for the MTA's background delivery before exiting.
const MTA_WAIT: Duration = Duration::from_secs(10);

/// Under systemd, give the MTA's delivery time to finish before we exit.
///
/// `sendmail` (exim, postfix' `sendmail`, …) takes the message, forks a delivery process
/// and returns; that process runs in our unit's cgroup, and when this command exits —
/// ExecStartPre= failing, or ExecStopPost= ending the unit — systemd kills whatever is
/// left there, so the alert would sit in the MTA's queue until its next queue run (if a
/// daemon runs one at all). So, when we run as part of a service (our cgroup is a
/// `.service`, `$INVOCATION_ID` is set), wait until no other process is left in our cgroup,
/// at most [`MTA_WAIT`]. Outside a service, nothing is waited for.
fn wait_for_mta() {
    if std::env::var_os("INVOCATION_ID").is_none() {
        return;
    }
    let Some(procs) = own_cgroup_procs() else {
        return;
    };
    let me = std::process::id().to_string();
    let deadline = Instant::now() + MTA_WAIT;
    while Instant::now() < deadline {
        let Ok(list) = fs::read_to_string(&procs) else {
            return;
        };
        if list.lines().all(|p| p.trim() == me || p.trim().is_empty()) {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    crate::stage::log(
        Priority::Notice,
        "the MTA is still delivering the alert; if it is killed with this service, the \
         mail waits in the MTA's queue",
    );
}

/// `cgroup.procs` of our own cgroup, when it is a service's: the unified hierarchy's
/// (`0::PATH`, under `/sys/fs/cgroup` or, on a hybrid system, `/sys/fs/cgroup/unified`),
/// else the `name=systemd` one's.
fn own_cgroup_procs() -> Option<PathBuf> {
    let text = fs::read_to_string("/proc/self/cgroup").ok()?;
    let mut candidates = Vec::new();
    for line in text.lines() {
        let mut parts = line.splitn(3, ':');
        let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
        if !path.ends_with(".service") {
            continue;
        }
        let rel = path.trim_start_matches('/');
        match controllers {
            "" => {
                candidates.push(Path::new("/sys/fs/cgroup").join(rel));
                candidates.push(Path::new("/sys/fs/cgroup/unified").join(rel));
            }
            "name=systemd" => candidates.push(Path::new("/sys/fs/cgroup/systemd").join(rel)),
            _ => {}
        }
    }
    candidates
        .into_iter()
        .map(|d| d.join("cgroup.procs"))
        .find(|p| p.is_file())
}

/// Poll `unit` until it is up or stopped (not on its way anywhere), or `deadline`.
fn settle(sd: &Systemd, unit: &str, deadline: Instant) -> Result<UnitState, String> {
    loop {
        let s = sd.unit_state(unit).map_err(|e| e.to_string())?;
        let moving = matches!(
            s.active_state.as_str(),
            "activating" | "deactivating" | "reloading"
        );
        if !moving || Instant::now() >= deadline {
            return Ok(s);
        }
        std::thread::sleep(POLL);
    }
}

fn usage(error: String) -> Outcome {
    crate::stage::log(Priority::Err, &error);
    Outcome::failure(Exit::Usage, "configuration error", error)
}

fn files(files: &[PathBuf]) -> String {
    files
        .iter()
        .map(|f| f.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

fn plural(n: usize, what: &str) -> String {
    if n == 1 {
        format!("1 {what}")
    } else {
        format!("{n} {what}s")
    }
}

fn reversed(record: &Record) -> String {
    record
        .start_order()
        .map(|u| u.unit.as_str())
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_round_trips_and_clears() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("runtime");
        assert_eq!(Record::load(&dir).unwrap(), None, "no record yet");
        let mut r = Record::new("0123abcd", Duration::from_secs(30));
        r.mark("a.service", Mark::Stopping);
        r.mark("b.service", Mark::Stopping);
        r.mark("a.service", Mark::Stopped);
        r.save(&dir).unwrap();
        let back = Record::load(&dir).unwrap().unwrap();
        assert_eq!(back, r);
        assert_eq!(back.units.len(), 2, "marking again does not duplicate");
        assert_eq!(back.units[0].state, Mark::Stopped);
        assert_eq!(back.units[1].state, Mark::Stopping);
        assert_eq!(back.stop_timeout(), Duration::from_secs(30));
        let text = fs::read_to_string(Record::path(&dir)).unwrap();
        assert!(text.contains("\"state\": \"stopping\""), "{text}");
        // Nothing but the record in the directory (the temp file was renamed).
        let names: Vec<_> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from(RECORD_NAME)]);
        assert!(Record::clear(&dir).unwrap());
        assert!(!Record::clear(&dir).unwrap(), "clearing twice is fine");
        assert_eq!(Record::load(&dir).unwrap(), None);
    }

    #[test]
    fn units_start_in_reverse_stop_order() {
        let mut r = Record::new("x", Duration::from_secs(1));
        for u in ["app.service", "db.service", "cache.service"] {
            r.mark(u, Mark::Stopped);
        }
        let order: Vec<_> = r.start_order().map(|u| u.unit.as_str()).collect();
        assert_eq!(order, ["cache.service", "db.service", "app.service"]);
        assert_eq!(r.unit_list(), "app.service db.service cache.service");
        assert!(r.contains("db.service") && !r.contains("web.service"));
    }

    #[test]
    fn a_damaged_or_foreign_record_is_an_error_not_nothing() {
        let d = tempfile::tempdir().unwrap();
        fs::write(Record::path(d.path()), b"{not json").unwrap();
        let e = Record::load(d.path()).unwrap_err();
        assert!(matches!(e, RecordError::Invalid { .. }), "{e}");
        assert!(e.to_string().contains("systemctl start"), "{e}");
        let mut r = Record::new("x", Duration::from_secs(1));
        r.version = 99;
        fs::write(Record::path(d.path()), serde_json::to_vec(&r).unwrap()).unwrap();
        let e = Record::load(d.path()).unwrap_err();
        assert!(e.to_string().contains("version 99"), "{e}");
    }

    #[test]
    fn cairn_result_is_success_only_for_a_clean_exit() {
        assert_eq!(snapshot_result(Some("success"), Some("0")), "success");
        assert_eq!(snapshot_result(Some("success\n"), Some(" 0")), "success");
        assert_eq!(snapshot_result(Some("exit-code"), Some("3")), "failure");
        assert_eq!(snapshot_result(Some("signal"), Some("KILL")), "failure");
        assert_eq!(snapshot_result(Some("timeout"), Some("TERM")), "failure");
        assert_eq!(snapshot_result(Some("oom-kill"), Some("9")), "failure");
        // SuccessExitStatus= could make another code "success"; only 0 counts.
        assert_eq!(snapshot_result(Some("success"), Some("5")), "failure");
        assert_eq!(snapshot_result(Some("success"), None), "failure");
        assert_eq!(snapshot_result(None, Some("0")), "failure");
        assert_eq!(snapshot_result(None, None), "failure", "run by hand");
    }

    fn hook(command: &str) -> Hook<'_> {
        Hook {
            name: "pre_hook",
            command,
            user: None,
            env: vec![("CAIRN_RESULT", "success".into())],
            timeout: Duration::from_secs(20),
        }
    }

    #[test]
    fn a_hook_runs_in_a_shell_and_its_output_is_handed_over() {
        let mut lines = Vec::new();
        run_hook(
            &hook("echo out-$CAIRN_RESULT; echo err >&2; printf 'no newline'"),
            &mut |l| lines.push(l.to_string()),
        )
        .unwrap();
        lines.sort();
        assert_eq!(lines, ["(stderr) err", "no newline", "out-success"]);
    }

    #[test]
    fn a_failing_hook_reports_its_status() {
        let e = run_hook(&hook("exit 7"), &mut |_| {}).unwrap_err();
        assert!(matches!(e, HookError::Exit(7)), "{e}");
        assert_eq!(e.to_string(), "it exited with status 7");
        let e = run_hook(&hook("kill -USR1 $$"), &mut |_| {}).unwrap_err();
        assert!(matches!(e, HookError::Signal(10)), "{e}");
    }

    #[test]
    fn a_hook_that_hangs_is_killed_with_what_it_started() {
        let d = tempfile::tempdir().unwrap();
        let pidfile = d.path().join("pid");
        let cmd = format!(
            "sleep 60 & echo $! > {}; echo started; wait",
            pidfile.display()
        );
        let mut h = hook(&cmd);
        h.timeout = Duration::from_millis(500);
        let t0 = Instant::now();
        let mut lines = Vec::new();
        let e = run_hook(&h, &mut |l| lines.push(l.to_string())).unwrap_err();
        assert!(matches!(e, HookError::Timeout(_)), "{e}");
        assert!(t0.elapsed() < Duration::from_secs(8), "{:?}", t0.elapsed());
        assert_eq!(lines, ["started"]);
        let pid: i32 = fs::read_to_string(&pidfile)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        // The background sleep was in the hook's process group: gone too (reaped by init,
        // or a zombie of this process's reaper at worst).
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let state = stat
                .rsplit(')')
                .next()
                .unwrap_or("")
                .split_whitespace()
                .next();
            if stat.is_empty() || state == Some("Z") {
                break;
            }
            assert!(Instant::now() < deadline, "sleep {pid} survived: {stat}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    #[test]
    fn hooks_get_no_secrets_and_the_hook_user_environment() {
        let user = HookUser {
            name: "nobody-here".into(),
            uid: nix::unistd::geteuid().as_raw(),
            gid: nix::unistd::getegid().as_raw(),
            groups: vec![],
            home: PathBuf::from("/nonexistent-home"),
        };
        let mut h = hook("true");
        h.user = Some(&user);
        let cmd = hook_process(&h).unwrap();
        let envs: Vec<(String, Option<String>)> = cmd
            .get_envs()
            .map(|(k, v)| {
                (
                    k.to_string_lossy().into_owned(),
                    v.map(|v| v.to_string_lossy().into_owned()),
                )
            })
            .collect();
        for k in HOOK_ENV_REMOVED {
            assert!(
                envs.contains(&(k.to_string(), None)),
                "{k} removed: {envs:?}"
            );
        }
        for (k, v) in [
            ("HOME", "/nonexistent-home"),
            ("USER", "nobody-here"),
            ("LOGNAME", "nobody-here"),
            ("CAIRN_RESULT", "success"),
        ] {
            assert!(
                envs.contains(&(k.to_string(), Some(v.to_string()))),
                "{k}={v}: {envs:?}"
            );
        }
        assert_eq!(
            cmd.get_current_dir(),
            Some(Path::new("/")),
            "home missing: /"
        );
    }

    #[test]
    fn an_unknown_hook_user_is_reported() {
        let e = HookUser::lookup("cairn-no-such-user-x").unwrap_err();
        assert!(matches!(e, HookError::NoSuchUser(_)), "{e}");
        let root = HookUser::lookup("root").unwrap();
        assert_eq!((root.uid, root.gid), (0, 0));
        assert!(root.groups.contains(&0));
    }

    #[test]
    fn dropping_privileges_needs_root() {
        if nix::unistd::geteuid().is_root() {
            // As root the switch works: the hook sees the other user's ids.
            let user = HookUser::lookup("nobody").unwrap();
            let mut h = hook("id -u; id -G");
            h.user = Some(&user);
            let mut lines = Vec::new();
            run_hook(&h, &mut |l| lines.push(l.to_string())).unwrap();
            assert_eq!(lines[0], user.uid.to_string());
            let mut want: Vec<String> = user.groups.iter().map(u32::to_string).collect();
            let mut got: Vec<String> = lines[1].split(' ').map(str::to_string).collect();
            want.sort();
            got.sort();
            assert_eq!(got, want, "supplementary groups from the group database");
        } else {
            let user = HookUser {
                name: "root".into(),
                uid: 0,
                gid: 0,
                groups: vec![0],
                home: "/root".into(),
            };
            let mut h = hook("true");
            h.user = Some(&user);
            let e = hook_process(&h).unwrap_err();
            assert!(matches!(e, HookError::NotRoot(_)), "{e}");
        }
    }

    #[test]
    fn severities_order_the_mail_verdict() {
        assert!(Severity::Down > Severity::Failed && Severity::Failed > Severity::Warning);
        assert_eq!(Severity::Down.verdict(), "DOWN");
    }
}
